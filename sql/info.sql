-- name: info
-- One row per split: epochs with rows that count (how many, first, last), rows, the rows with nothing to
-- score among them (a sequence example whose every target is -100: tokens = 0, no score), distinct samples,
-- ranks.
-- parameters: none
-- views: records, unscored
WITH counted AS (
    SELECT split, epoch, sample_id, rank, 0 AS unscored FROM records
    UNION ALL
    SELECT split, epoch, sample_id, rank, 1 AS unscored FROM unscored
)
SELECT
    split,
    count(DISTINCT epoch) AS epochs,
    min(epoch) AS first_epoch,
    max(epoch) AS last_epoch,
    count(*) AS rows,
    sum(unscored) AS unscored_rows,
    count(DISTINCT sample_id) AS samples,
    count(DISTINCT rank) AS ranks
FROM counted
GROUP BY split
ORDER BY split
