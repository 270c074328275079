-- name: epochs
-- The epochs of $split that have rows that count, ascending, with the training accuracy in each:
--   accuracy = mean of `correct` over the epoch's rows (the share of predictions equal to the target).
-- parameters: $split (text)
-- views: records
SELECT epoch, avg(correct) AS accuracy
FROM records
WHERE split = $split
GROUP BY epoch
ORDER BY epoch
