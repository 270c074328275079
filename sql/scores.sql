-- name: scores
-- Every per-sample score in one pass over epoch_stats (the same definitions as aum.sql, aul.sql,
-- data_map.sql, el2n.sql and forgetting.sql, which compute each score alone), over epochs
-- e in [$epoch_from, $epoch_to); EL2N over e in [$epoch_from, $el2n_to).
--   aum = mean_e margin_e; aul = sum_e loss_e; confidence = mean_e prob_e;
--   variability = population std_e prob_e; correctness = mean_e correct_e;
--   el2n = mean_{e < $el2n_to} el2n_e; forgetting columns as in forgetting.sql.
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive), $el2n_to (int, exclusive)
-- views: epoch_stats
WITH marked AS (
    SELECT
        e.*,
        CASE WHEN e.correct > 0.5 THEN 1 ELSE 0 END AS learned,
        lag(CASE WHEN e.correct > 0.5 THEN 1 ELSE 0 END)
            OVER (PARTITION BY e.sample_id ORDER BY e.epoch) AS learned_before
    FROM epoch_stats AS e
    WHERE e.split = $split
      AND e.epoch >= $epoch_from
      AND e.epoch < $epoch_to
)
SELECT
    sample_id,
    avg(margin) AS aum,
    sum(loss) AS aul,
    avg(prob) AS confidence,
    stddev_pop(prob) AS variability,
    avg(correct) AS correctness,
    avg(CASE WHEN epoch < $el2n_to THEN el2n END) AS el2n,
    max(learned) = 0 AS never_learned,
    CASE WHEN max(learned) = 1
         THEN CAST(sum(CASE WHEN learned_before = 1 AND learned = 0 THEN 1 ELSE 0 END) AS BIGINT) END
         AS forgetting_events,
    min(CASE WHEN learned = 1 THEN epoch END) AS first_learned_epoch,
    CASE WHEN max(CASE WHEN learned = 1 THEN epoch END) = max(epoch)
         THEN max(CASE WHEN learned = 1 AND coalesce(learned_before, 0) = 0 THEN epoch END) END
         AS learned_for_good_epoch,
    count(*) AS epochs
FROM marked
GROUP BY sample_id
