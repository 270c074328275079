-- name: learning_percentage
-- Learning percentage per sample (Mekala et al., ACL Findings 2024): the share of its total perplexity
-- drop that the first epoch of training achieved. With P = exp(mean loss) (perplexity; 1 / p(target) for a
-- classifier row):
--   p_initial = P in the pre-training pass (split $initial_split, epoch $initial_epoch: the model before
--               any update)
--   p_first   = P in epoch $after_first_epoch of $split: the second recorded epoch, whose losses are those
--               of the model after one epoch (a row is recorded before the update of its own batch)
--   p_last    = P in the sample's last recorded epoch of $split in [$epoch_from, $epoch_to)
--   learning_percentage = (p_initial - p_first) / (p_initial - p_last); null when p_initial = p_last.
-- Low: learned late (hard); the paper keeps the lowest. The perplexities are computed from losses clipped at
-- 80 (exp overflows float64 past about 709).
-- parameters: $split (text), $initial_split (text), $initial_epoch (int), $after_first_epoch (int),
--             $epoch_from (int), $epoch_to (int, exclusive)
-- views: epoch_stats
WITH initial AS (
    SELECT sample_id, exp(least(loss, 80.0)) AS p_initial
    FROM epoch_stats
    WHERE split = $initial_split
      AND epoch = $initial_epoch
),
first_epoch AS (
    SELECT sample_id, exp(least(loss, 80.0)) AS p_first
    FROM epoch_stats
    WHERE split = $split
      AND epoch = $after_first_epoch
),
last_epoch AS (
    SELECT sample_id, exp(least(max_by(loss, epoch), 80.0)) AS p_last
    FROM epoch_stats
    WHERE split = $split
      AND epoch >= $epoch_from
      AND epoch < $epoch_to
    GROUP BY sample_id
)
SELECT
    sample_id,
    p_initial,
    p_first,
    p_last,
    CASE WHEN p_initial <> p_last THEN (p_initial - p_first) / (p_initial - p_last) END AS learning_percentage
FROM initial
JOIN first_epoch USING (sample_id)
JOIN last_epoch USING (sample_id)
