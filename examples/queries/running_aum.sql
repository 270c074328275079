-- AUM so far, per observed label: how the margin of each class develops while training runs.
-- tdlog sql RUN -f examples/queries/running_aum.sql
WITH per_sample AS (
    SELECT sample_id, any_value(target) AS label, avg(margin) AS aum, count(*) AS epochs
    FROM epoch_stats
    WHERE split = 'train'
    GROUP BY sample_id
)
SELECT label, count(*) AS samples, avg(aum) AS mean_aum, min(aum) AS lowest_aum,
       count(*) FILTER (WHERE aum < 0) AS negative_aum, max(epochs) AS epochs
FROM per_sample
GROUP BY label
ORDER BY label
