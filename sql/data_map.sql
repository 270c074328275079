-- name: data_map
-- Data map coordinates (Swayamdipta et al. 2020) per sample, over epochs e in [$epoch_from, $epoch_to):
--   confidence  = mean_e p_e            (p_e: per-epoch mean softmax probability of the target)
--   variability = sqrt(mean_e (p_e - confidence)^2)   (population standard deviation)
--   correctness = mean_e c_e            (c_e: mean `correct` of the epoch's observations: pred = target for a
--                                     classification row, the token accuracy for a sequence row)
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive)
-- views: epoch_stats
SELECT
    e.sample_id,
    avg(e.prob) AS confidence,
    stddev_pop(e.prob) AS variability,
    avg(e.correct) AS correctness,
    count(*) AS epochs
FROM epoch_stats AS e
WHERE e.split = $split
  AND e.epoch >= $epoch_from
  AND e.epoch < $epoch_to
GROUP BY e.sample_id
