-- name: scores_one_pass
-- DuckDB's fast path for scores.sql: one GROUP BY sample_id over `records`, no per-epoch averaging and no
-- window. A sample's row is exact when each of its epochs in [$epoch_from, $epoch_to) was observed once and
-- lies in the first 248 epochs of the range (then per-observation means are per-epoch means); the engine
-- checks this per sample (observations = number of bits set in recorded_0..3) and recomputes the other
-- samples with scores.sql. Bit b of word w stands for epoch e = $epoch_from + 62 w + b:
--   recorded_w = epochs with a record, learned_w = epochs with pred = target (forgetting columns are
--   computed from them as in forgetting.sql). Other columns as in scores.sql.
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive), $el2n_to (int, exclusive)
-- views: records
SELECT
    sample_id,
    avg(margin) AS aum,
    sum(loss) AS aul,
    avg(prob) AS confidence,
    stddev_pop(prob) AS variability,
    avg(CASE WHEN pred = target THEN 1.0 ELSE 0.0 END) AS correctness,
    avg(CASE WHEN epoch < $el2n_to THEN el2n END) AS el2n,
    bit_or(CASE WHEN (epoch - $epoch_from) // 62 = 0 THEN 1::BIGINT << ((epoch - $epoch_from) % 62) END) AS recorded_0,
    bit_or(CASE WHEN (epoch - $epoch_from) // 62 = 1 THEN 1::BIGINT << ((epoch - $epoch_from) % 62) END) AS recorded_1,
    bit_or(CASE WHEN (epoch - $epoch_from) // 62 = 2 THEN 1::BIGINT << ((epoch - $epoch_from) % 62) END) AS recorded_2,
    bit_or(CASE WHEN (epoch - $epoch_from) // 62 = 3 THEN 1::BIGINT << ((epoch - $epoch_from) % 62) END) AS recorded_3,
    bit_or(CASE WHEN (epoch - $epoch_from) // 62 = 0 AND pred = target THEN 1::BIGINT << ((epoch - $epoch_from) % 62) END)
        AS learned_0,
    bit_or(CASE WHEN (epoch - $epoch_from) // 62 = 1 AND pred = target THEN 1::BIGINT << ((epoch - $epoch_from) % 62) END)
        AS learned_1,
    bit_or(CASE WHEN (epoch - $epoch_from) // 62 = 2 AND pred = target THEN 1::BIGINT << ((epoch - $epoch_from) % 62) END)
        AS learned_2,
    bit_or(CASE WHEN (epoch - $epoch_from) // 62 = 3 AND pred = target THEN 1::BIGINT << ((epoch - $epoch_from) % 62) END)
        AS learned_3,
    count(*) AS observations
FROM records
WHERE split = $split
  AND epoch >= $epoch_from
  AND epoch < $epoch_to
GROUP BY sample_id
