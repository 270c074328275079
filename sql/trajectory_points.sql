-- name: trajectory_points
-- Spark's form of MAP-D trajectories (Spark dialect: collect_list, named_struct): one row per sample of
-- $split with its per-epoch mean losses in epochs [$epoch_from, $epoch_last] as a list of (epoch, loss)
-- points, gathered by the executors (analytics/spark_mapd.py forward-fills them into trajectories).
-- parameters: $split (text), $epoch_from (int), $epoch_last (int, inclusive)
-- views: epoch_stats
SELECT sample_id, collect_list(named_struct('epoch', epoch, 'loss', loss)) AS points
FROM epoch_stats
WHERE split = $split
  AND epoch >= $epoch_from
  AND epoch <= $epoch_last
GROUP BY sample_id
