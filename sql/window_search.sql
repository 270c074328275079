-- name: window_search
-- The epoch-window criterion's rows (tdlog.analytics.window.choose_window), in one pass over `records`:
-- every row of $split of a sample of the threshold samples and of the other registered non-probe samples
-- (at most $max_samples of each group, the lowest hash(sample_id) first: deterministic per engine), as
-- sample_id, is_threshold, epoch, margin. choose_window averages each sample's rows per epoch and computes,
-- for every recorded epoch e and each group, over the group's samples with a record in epoch e:
--   aum_e(i) = mean of sample i's per-epoch mean margins over its recorded epochs <= e
--              (its AUM over the prefix window [first epoch, e + 1)),
-- and the group's mean and population variance of aum_e. The sample is joined as a broadcast table (a hint
-- Spark reads; a comment to DuckDB): no shuffle of the records.
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
)
SELECT /*+ BROADCAST(c) */ r.sample_id, c.is_threshold, r.epoch, r.margin
FROM records AS r
JOIN chosen AS c ON c.sample_id = r.sample_id
WHERE r.split = $split
