-- name: window_search
-- The epoch-window criterion's statistics (tdlog.analytics.window.choose_window), in one pass over
-- `records`: for a sample of the threshold samples and of the other registered non-probe samples (at most
-- $max_samples of each group, the lowest hash(sample_id) first: deterministic per engine), per group and
-- recorded epoch e, over the group's samples with a record in epoch e:
--   margin_e(i) = sample i's mean margin in epoch e,
--   aum_e(i)    = mean of sample i's margin_t over its recorded epochs t <= e
--                 (its AUM over the prefix window [first epoch, e + 1)),
-- as is_threshold, epoch, samples (count), aum_mean, aum_var (population variance of aum_e) and
-- margin_mean (mean of margin_e: the group's learning curve). The sample is joined as a broadcast table (a
-- hint Spark reads; a comment to DuckDB): no shuffle of the records; only the sampled samples' per-epoch
-- rows are aggregated further, and only two rows per epoch leave the engine.
-- parameters: $split (text), $max_samples (int)
-- views: records, samples
WITH chosen AS (
    SELECT sample_id, is_threshold
    FROM (
        SELECT
            sample_id,
            is_threshold,
            row_number() OVER (PARTITION BY is_threshold ORDER BY hash(sample_id), sample_id) AS pick
        FROM samples
        WHERE probe IS NULL AND is_threshold IS NOT NULL
    ) AS ranked
    WHERE pick <= $max_samples
),
per_epoch AS (
    SELECT /*+ BROADCAST(c) */ r.sample_id, c.is_threshold, r.epoch, avg(r.margin) AS margin
    FROM records AS r
    JOIN chosen AS c ON c.sample_id = r.sample_id
    WHERE r.split = $split
    GROUP BY r.sample_id, c.is_threshold, r.epoch
),
prefix AS (
    SELECT
        is_threshold,
        epoch,
        margin,
        avg(margin) OVER (PARTITION BY sample_id ORDER BY epoch
                          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS aum
    FROM per_epoch
)
SELECT
    is_threshold,
    epoch,
    count(*) AS samples,
    avg(aum) AS aum_mean,
    var_pop(aum) AS aum_var,
    avg(margin) AS margin_mean
FROM prefix
GROUP BY is_threshold, epoch
ORDER BY is_threshold, epoch
