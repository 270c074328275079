-- name: el2n
-- EL2N score (Paul et al. 2021, "data diet") per sample:
--   el2n = mean over epochs e in [$epoch_from, $epoch_to) of the per-epoch mean || softmax(z) - onehot(y) ||_2.
-- The data-diet paper scores early in training: pass the first epochs.
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive)
-- views: epoch_stats
SELECT
    e.sample_id,
    avg(e.el2n) AS el2n,
    count(*) AS epochs
FROM epoch_stats AS e
WHERE e.split = $split
  AND e.epoch >= $epoch_from
  AND e.epoch < $epoch_to
GROUP BY e.sample_id
