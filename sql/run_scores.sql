-- name: run_scores
-- Several runs of one dataset at once (tdlog.analytics.open_runs): per run and sample, over the run's epoch
-- window [epoch_from, epoch_to) (per-epoch means first, as in scores.sql):
--   aum = mean_e margin_e, aul = sum_e loss_e, confidence = mean_e p_e, variability = sqrt(mean_e (p_e -
--   confidence)^2), correctness = mean_e c_e, forgetting_events (as forgetting.sql: learned -> not learned
--   transitions between consecutive recorded epochs, learned = c_e > 0.5; NULL when never learned),
--   epochs = recorded epochs in the window; el2n = mean_e el2n_e over the run's epochs e < el2n_to (EL2N's
--   early epochs, whatever the window);
-- the sample's role in that run (is_threshold, probe; false/null where unregistered), and the run's
-- threshold cutoff = the $percentile quantile (linear interpolation) of its threshold samples' aum.
-- parameters: $split (text), $runs, $epoch_from, $epoch_to, $el2n_to (lists: one entry per run),
--             $percentile (fraction)
-- views: epoch_stats, samples (the union views of open_runs, with a `run` column)
WITH windows AS (
    SELECT
        unnest($runs) AS run,
        unnest($epoch_from) AS epoch_from,
        unnest($epoch_to) AS epoch_to,
        unnest($el2n_to) AS el2n_to
),
marked AS (
    SELECT
        e.*,
        w.epoch_from,
        w.epoch_to,
        CASE WHEN e.correct > 0.5 THEN 1 ELSE 0 END AS learned,
        lag(CASE WHEN e.correct > 0.5 THEN 1 ELSE 0 END) OVER (
            PARTITION BY e.run, e.sample_id, e.epoch >= w.epoch_from AND e.epoch < w.epoch_to
            ORDER BY e.epoch) AS learned_before,
        e.epoch < w.el2n_to AS early
    FROM epoch_stats AS e
    JOIN windows AS w ON w.run = e.run
    WHERE e.split = $split
      AND ((e.epoch >= w.epoch_from AND e.epoch < w.epoch_to) OR e.epoch < w.el2n_to)
),
per_sample AS (
    SELECT
        run,
        sample_id,
        avg(margin) FILTER (WHERE epoch >= epoch_from AND epoch < epoch_to) AS aum,
        sum(loss) FILTER (WHERE epoch >= epoch_from AND epoch < epoch_to) AS aul,
        avg(prob) FILTER (WHERE epoch >= epoch_from AND epoch < epoch_to) AS confidence,
        stddev_pop(prob) FILTER (WHERE epoch >= epoch_from AND epoch < epoch_to) AS variability,
        avg(correct) FILTER (WHERE epoch >= epoch_from AND epoch < epoch_to) AS correctness,
        CASE WHEN max(learned) FILTER (WHERE epoch >= epoch_from AND epoch < epoch_to) = 1
             THEN count(*) FILTER (WHERE epoch >= epoch_from AND epoch < epoch_to
                                   AND learned_before = 1 AND learned = 0) END AS forgetting_events,
        avg(el2n) FILTER (WHERE early) AS el2n,
        count(*) FILTER (WHERE epoch >= epoch_from AND epoch < epoch_to) AS epochs
    FROM marked
    GROUP BY run, sample_id
    HAVING count(*) FILTER (WHERE epoch >= epoch_from AND epoch < epoch_to) > 0
),
roles AS (
    SELECT
        p.*,
        coalesce(s.is_threshold, false) AS is_threshold,
        s.probe
    FROM per_sample AS p
    LEFT JOIN samples AS s ON s.run = p.run AND s.sample_id = p.sample_id
),
cutoffs AS (
    SELECT run, percentile_cont($percentile) WITHIN GROUP (ORDER BY aum) AS cutoff
    FROM roles
    WHERE is_threshold
    GROUP BY run
)
SELECT r.*, c.cutoff
FROM roles AS r
LEFT JOIN cutoffs AS c ON c.run = r.run
ORDER BY r.run, r.sample_id
