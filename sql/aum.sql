-- name: aum
-- AUM (Area Under the Margin, Pleiss et al. 2020) per sample:
--   aum = mean over epochs e in [$epoch_from, $epoch_to) of the per-epoch mean margin,
--   margin = z_y - max_{j != y} z_j.
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive)
-- views: epoch_stats, samples
SELECT
    e.sample_id,
    avg(e.margin) AS aum,
    count(*) AS epochs
FROM epoch_stats AS e
WHERE e.split = $split
  AND e.epoch >= $epoch_from
  AND e.epoch < $epoch_to
GROUP BY e.sample_id
