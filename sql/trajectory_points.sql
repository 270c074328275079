-- name: trajectory_points
-- Spark's form of MAP-D trajectories (Spark dialect: collect_list, named_struct), in one aggregation over
-- `records`: one row per sample of $split with each of its observations in epochs [$epoch_from,
-- $epoch_last] as an (epoch, loss) point. analytics/spark_mapd.py averages the points of each epoch (the
-- per-epoch mean loss of epoch_stats) and forward-fills them into trajectories.
-- parameters: $split (text), $epoch_from (int), $epoch_last (int, inclusive)
-- views: records
SELECT sample_id, collect_list(named_struct('epoch', epoch, 'loss', loss)) AS points
FROM records
WHERE split = $split
  AND epoch >= $epoch_from
  AND epoch <= $epoch_last
GROUP BY sample_id
