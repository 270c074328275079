-- name: scores_one_pass
-- The fast path for scores.sql, on both engines: one GROUP BY sample_id over `records`, no per-epoch
-- averaging and no window. A sample's row is exact when each of its epochs in [$epoch_from, $epoch_to) was
-- observed once and lies in the first 248 epochs of the range (then per-observation means are per-epoch
-- means); the caller checks this per sample (observations = number of bits set in recorded_0..3) and
-- recomputes the other samples with scores.sql, which stays the definition.
-- Bit b of BIGINT word w (62 bits a word) stands for epoch e = $epoch_from + 62 w + b:
--   recorded_w = epochs with a record, learned_w = epochs with correct > 0.5 (pred = target) (the forgetting
--   columns are computed from them as in forgetting.sql, by analytics.epoch_masks). Other columns as in
--   scores.sql.
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive), $el2n_to (int, exclusive)
-- views: records
SELECT
    sample_id,
    avg(margin) AS aum,
    sum(loss) AS aul,
    avg(prob) AS confidence,
    stddev_pop(prob) AS variability,
    avg(correct) AS correctness,
    avg(CASE WHEN epoch < $el2n_to THEN el2n END) AS el2n,
    count(*) AS observations,
    bit_or(CASE WHEN epoch - $epoch_from < 62
                THEN CAST(1 AS BIGINT) << CAST(epoch - $epoch_from AS INT) ELSE 0 END) AS recorded_0,
    bit_or(CASE WHEN epoch - $epoch_from >= 62 AND epoch - $epoch_from < 124
                THEN CAST(1 AS BIGINT) << CAST(epoch - $epoch_from - 62 AS INT) ELSE 0 END) AS recorded_1,
    bit_or(CASE WHEN epoch - $epoch_from >= 124 AND epoch - $epoch_from < 186
                THEN CAST(1 AS BIGINT) << CAST(epoch - $epoch_from - 124 AS INT) ELSE 0 END) AS recorded_2,
    bit_or(CASE WHEN epoch - $epoch_from >= 186
                THEN CAST(1 AS BIGINT) << CAST(epoch - $epoch_from - 186 AS INT) ELSE 0 END) AS recorded_3,
    bit_or(CASE WHEN epoch - $epoch_from < 62 AND correct > 0.5
                THEN CAST(1 AS BIGINT) << CAST(epoch - $epoch_from AS INT) ELSE 0 END) AS learned_0,
    bit_or(CASE WHEN epoch - $epoch_from >= 62 AND epoch - $epoch_from < 124 AND correct > 0.5
                THEN CAST(1 AS BIGINT) << CAST(epoch - $epoch_from - 62 AS INT) ELSE 0 END) AS learned_1,
    bit_or(CASE WHEN epoch - $epoch_from >= 124 AND epoch - $epoch_from < 186 AND correct > 0.5
                THEN CAST(1 AS BIGINT) << CAST(epoch - $epoch_from - 124 AS INT) ELSE 0 END) AS learned_2,
    bit_or(CASE WHEN epoch - $epoch_from >= 186 AND correct > 0.5
                THEN CAST(1 AS BIGINT) << CAST(epoch - $epoch_from - 186 AS INT) ELSE 0 END) AS learned_3
FROM records
WHERE split = $split
  AND epoch >= $epoch_from
  AND epoch < $epoch_to
GROUP BY sample_id
