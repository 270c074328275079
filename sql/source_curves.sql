-- name: source_curves
-- Loss and accuracy per data source per epoch: for each value of the samples column `source` (another
-- column: put its name in place of `source` in sample_sources) and each recorded epoch of $split, over the
-- real samples of that source with records in that epoch (threshold and probe samples left out):
--   samples   = how many
--   mean_loss = mean over them of each sample's mean loss in the epoch
--   accuracy  = mean over them of each sample's mean `correct` in the epoch (token accuracy for sequences)
-- parameters: $split (text)
-- views: epoch_stats, samples
WITH sample_sources AS (
    SELECT sample_id, CAST(source AS STRING) AS source
    FROM samples
    WHERE probe IS NULL
      AND NOT coalesce(is_threshold, false)
)
SELECT s.source, e.epoch, count(*) AS samples, avg(e.loss) AS mean_loss, avg(e.correct) AS accuracy
FROM epoch_stats AS e
JOIN sample_sources AS s USING (sample_id)
WHERE e.split = $split
GROUP BY s.source, e.epoch
ORDER BY s.source, e.epoch
