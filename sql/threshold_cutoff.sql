-- name: threshold_cutoff
-- AUM cutoff from threshold samples (Pleiss et al. 2020): the $percentile quantile (a fraction, 0.99 for
-- the 99th percentile, linear interpolation as numpy.percentile) of the threshold samples' AUM, where
--   aum = mean over epochs e in [$epoch_from, $epoch_to) of the per-epoch mean margin (against the
--   threshold class they were trained on). Real samples with AUM below the cutoff are flagged.
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive), $percentile (fraction)
-- views: records, samples (the threshold samples' rows are kept before any grouping: epoch_stats' per-epoch
-- means of them alone)
WITH per_epoch AS (
    SELECT r.sample_id, r.epoch, avg(r.margin) AS margin
    FROM records AS r
    WHERE r.split = $split
      AND r.epoch >= $epoch_from
      AND r.epoch < $epoch_to
      AND r.sample_id IN (SELECT sample_id FROM samples WHERE is_threshold)
    GROUP BY r.sample_id, r.epoch
),
threshold_aum AS (
    SELECT sample_id, avg(margin) AS aum
    FROM per_epoch
    GROUP BY sample_id
)
SELECT
    percentile_cont($percentile) WITHIN GROUP (ORDER BY aum) AS cutoff,
    count(*) AS threshold_samples
FROM threshold_aum
