-- name: window_search
-- The epoch-window criterion's inputs (tdlog.analytics.window.choose_window), in one pass over `records`:
-- for every recorded epoch e of $split and each group (threshold samples, other registered non-probe
-- samples), over the group's samples with a record in epoch e:
--   aum_e(i) = mean of sample i's per-epoch mean margins over its recorded epochs <= e
--              (its AUM over the prefix window [first epoch, e + 1)),
--   samples = count, mean_aum = mean_i aum_e(i), var_aum = population variance of aum_e(i).
-- Each group is a sample of at most $max_samples of its samples, the lowest hash(sample_id) first
-- (deterministic per engine).
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
    SELECT r.sample_id, r.epoch, avg(r.margin) AS margin
    FROM records AS r
    JOIN chosen AS c ON c.sample_id = r.sample_id
    WHERE r.split = $split
    GROUP BY r.sample_id, r.epoch
),
prefix AS (
    SELECT
        sample_id,
        epoch,
        avg(margin) OVER (PARTITION BY sample_id ORDER BY epoch) AS aum
    FROM per_epoch
)
SELECT
    p.epoch,
    c.is_threshold,
    count(*) AS samples,
    avg(p.aum) AS mean_aum,
    var_pop(p.aum) AS var_aum
FROM prefix AS p
JOIN chosen AS c ON c.sample_id = p.sample_id
GROUP BY p.epoch, c.is_threshold
ORDER BY p.epoch, c.is_threshold
