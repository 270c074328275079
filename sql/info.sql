-- name: info
-- One row per split: epochs with rows that count (how many, first, last), rows, distinct samples, ranks.
-- parameters: none
-- views: records
SELECT
    split,
    count(DISTINCT epoch) AS epochs,
    min(epoch) AS first_epoch,
    max(epoch) AS last_epoch,
    count(*) AS rows,
    count(DISTINCT sample_id) AS samples,
    count(DISTINCT rank) AS ranks
FROM records
GROUP BY split
ORDER BY split
