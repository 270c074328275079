-- name: run_scores
-- Several runs of one dataset at once (tdlog.analytics.open_runs): per run and sample, over the run's epoch
-- window [epoch_from, epoch_to) (per-epoch means first, as in scores.sql):
--   aum = mean_e margin_e, aul = sum_e loss_e, confidence = mean_e p_e, variability = sqrt(mean_e (p_e -
--   confidence)^2), correctness = mean_e c_e, epochs = recorded epochs in the window;
-- the sample's role in that run (is_threshold, probe; false/null where unregistered), and the run's
-- threshold cutoff = the $percentile quantile (linear interpolation) of its threshold samples' aum.
-- parameters: $split (text), $runs, $epoch_from, $epoch_to (lists: one window per run), $percentile (fraction)
-- views: epoch_stats, samples (the union views of open_runs, with a `run` column)
WITH windows AS (
    SELECT unnest($runs) AS run, unnest($epoch_from) AS epoch_from, unnest($epoch_to) AS epoch_to
),
per_sample AS (
    SELECT
        e.run,
        e.sample_id,
        avg(e.margin) AS aum,
        sum(e.loss) AS aul,
        avg(e.prob) AS confidence,
        stddev_pop(e.prob) AS variability,
        avg(e.correct) AS correctness,
        count(*) AS epochs
    FROM epoch_stats AS e
    JOIN windows AS w ON w.run = e.run
    WHERE e.split = $split
      AND e.epoch >= w.epoch_from
      AND e.epoch < w.epoch_to
    GROUP BY e.run, e.sample_id
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
