-- name: threshold_cutoff
-- AUM cutoff from threshold samples (Pleiss et al. 2020): the $percentile quantile (a fraction, 0.99 for
-- the 99th percentile, linear interpolation as numpy.percentile) of the threshold samples' AUM, where
--   aum = mean over epochs e in [$epoch_from, $epoch_to) of the per-epoch mean margin (against the
--   threshold class they were trained on). Real samples with AUM below the cutoff are flagged.
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive), $percentile (fraction)
-- views: epoch_stats, samples
WITH threshold_aum AS (
    SELECT
        e.sample_id,
        avg(e.margin) AS aum
    FROM epoch_stats AS e
    JOIN samples AS s ON s.sample_id = e.sample_id
    WHERE s.is_threshold
      AND e.split = $split
      AND e.epoch >= $epoch_from
      AND e.epoch < $epoch_to
    GROUP BY e.sample_id
)
SELECT
    percentile_cont($percentile) WITHIN GROUP (ORDER BY aum) AS cutoff,
    count(*) AS threshold_samples
FROM threshold_aum
