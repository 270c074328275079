-- name: forgetting
-- Forgetting events (Toneva et al. 2019) per sample, over recorded epochs e in [$epoch_from, $epoch_to).
-- A sample is learned in epoch e when the mean `correct` of its observations in e exceeds 0.5 (more than
-- half of its predictions right: pred = target for a classification row, token accuracy for a sequence row).
--   forgetting_events      = number of learned -> not learned transitions between consecutive recorded
--                            epochs; NULL when the sample was never learned (never_learned = true)
--   first_learned_epoch    = first epoch in which it is learned (NULL if never)
--   learned_for_good_epoch = first epoch from which it stays learned to the last recorded epoch (NULL if
--                            not learned at the last recorded epoch)
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive)
-- views: epoch_stats
WITH marked AS (
    SELECT
        e.sample_id,
        e.epoch,
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
