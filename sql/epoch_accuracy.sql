-- name: epoch_accuracy
-- The training accuracy in each epoch of $split that has rows that count:
--   accuracy = mean of `correct` over the epoch's rows (the share of predictions equal to the target).
-- parameters: $split (text)
-- views: records
SELECT epoch, avg(correct) AS accuracy
FROM records
WHERE split = $split
GROUP BY epoch
ORDER BY epoch
