-- name: epochs
-- The epochs of $split that have rows that count, ascending.
-- parameters: $split (text)
-- views: records
SELECT DISTINCT epoch
FROM records
WHERE split = $split
ORDER BY epoch
