-- name: last_epoch
-- Per sample, at its last recorded epoch in [$epoch_from, $epoch_to) of $split:
--   predicted = the most frequent argmax prediction there (ties: the smaller class),
--   p_target  = the mean softmax probability of the target there.
-- Used by MAP-D label correction (ŷ) and training priority (p(target)).
-- parameters: $split (text), $epoch_from (int), $epoch_to (int, exclusive)
-- views: records
WITH in_range AS (
    SELECT sample_id, epoch, pred, prob
    FROM records
    WHERE split = $split
      AND epoch >= $epoch_from
      AND epoch < $epoch_to
),
last AS (
    SELECT sample_id, max(epoch) AS epoch FROM in_range GROUP BY sample_id
),
observed AS (
    SELECT r.sample_id, r.epoch, r.pred, r.prob FROM in_range AS r JOIN last USING (sample_id, epoch)
),
votes AS (
    SELECT sample_id, pred, count(*) AS n FROM observed GROUP BY sample_id, pred
),
ranked AS (
    SELECT sample_id, pred, row_number() OVER (PARTITION BY sample_id ORDER BY n DESC, pred ASC) AS place
    FROM votes
)
SELECT
    o.sample_id,
    any_value(o.epoch) AS last_epoch,
    avg(o.prob) AS p_target,
    any_value(v.pred) AS predicted
FROM observed AS o
JOIN ranked AS v ON v.sample_id = o.sample_id AND v.place = 1
GROUP BY o.sample_id
