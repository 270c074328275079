-- name: probe_trajectories
-- Mean loss trajectory of each MAP-D probe suite: per suite and epoch of $split, the mean over its probes
-- (reference and held-out) of their per-epoch mean loss.
-- parameters: $split (text)
-- views: epoch_stats, samples
SELECT s.probe AS suite, e.epoch, avg(e.loss) AS mean_loss
FROM epoch_stats AS e
JOIN samples AS s USING (sample_id)
WHERE e.split = $split
  AND s.probe IS NOT NULL
GROUP BY s.probe, e.epoch
ORDER BY s.probe, e.epoch
