-- name: scores_one_pass
-- DuckDB's fast path for scores.sql (DuckDB dialect: HUGEINT bit masks): one GROUP BY sample_id over
-- `records`, no per-epoch averaging and no window. A sample's row is exact when each of its epochs in
-- [$epoch_from, $epoch_to) was observed once and lies in the first 248 epochs of the range (then
-- per-observation means are per-epoch means); the engine checks this per sample (observations = number of
-- bits set in recorded_0..3) and recomputes the other samples with scores.sql, which stays the definition.
-- Bit b of word w (62 bits a word) stands for epoch e = $epoch_from + 62 w + b:
--   recorded_w = epochs with a record, learned_w = epochs with correct > 0.5 (pred = target) (the forgetting columns are
--   computed from them as in forgetting.sql, by analytics.epoch_masks). Other columns as in scores.sql.
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive), $el2n_to (int, exclusive)
-- views: records
WITH packed AS (
    SELECT
        sample_id,
        avg(margin) AS aum,
        sum(loss) AS aul,
        avg(prob) AS confidence,
        stddev_pop(prob) AS variability,
        avg(correct) AS correctness,
        avg(CASE WHEN epoch < $el2n_to THEN el2n END) AS el2n,
        count(*) AS observations,
        bit_or(CASE WHEN epoch - $epoch_from < 124
                    THEN 1::HUGEINT << (epoch - $epoch_from)::HUGEINT END) AS recorded_low,
        bit_or(CASE WHEN epoch - $epoch_from >= 124
                    THEN 1::HUGEINT << (epoch - $epoch_from - 124)::HUGEINT END) AS recorded_high,
        bit_or(CASE WHEN epoch - $epoch_from < 124 AND correct > 0.5
                    THEN 1::HUGEINT << (epoch - $epoch_from)::HUGEINT END) AS learned_low,
        bit_or(CASE WHEN epoch - $epoch_from >= 124 AND correct > 0.5
                    THEN 1::HUGEINT << (epoch - $epoch_from - 124)::HUGEINT END) AS learned_high
    FROM records
    WHERE split = $split
      AND epoch >= $epoch_from
      AND epoch < $epoch_to
    GROUP BY sample_id
)
SELECT
    sample_id, aum, aul, confidence, variability, correctness, el2n, observations,
    (recorded_low & 4611686018427387903)::BIGINT AS recorded_0,
    (recorded_low >> 62)::BIGINT AS recorded_1,
    (recorded_high & 4611686018427387903)::BIGINT AS recorded_2,
    (recorded_high >> 62)::BIGINT AS recorded_3,
    (learned_low & 4611686018427387903)::BIGINT AS learned_0,
    (learned_low >> 62)::BIGINT AS learned_1,
    (learned_high & 4611686018427387903)::BIGINT AS learned_2,
    (learned_high >> 62)::BIGINT AS learned_3
FROM packed
