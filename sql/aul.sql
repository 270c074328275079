-- name: aul
-- AUL (Area Under the Loss, "Detecting label noise from loss curves") per sample:
--   aul = sum over epochs e in [$epoch_from, $epoch_to) of the per-epoch mean loss.
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive)
-- views: epoch_stats
SELECT
    e.sample_id,
    sum(e.loss) AS aul,
    count(*) AS epochs
FROM epoch_stats AS e
WHERE e.split = $split
  AND e.epoch >= $epoch_from
  AND e.epoch < $epoch_to
GROUP BY e.sample_id
