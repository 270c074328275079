-- Training progress per committed epoch: rows, samples seen, mean loss, accuracy, non-finite losses.
-- tdlog sql RUN -f examples/queries/progress_by_epoch.sql
SELECT epoch,
       count(*) AS rows,
       count(DISTINCT sample_id) AS samples,
       avg(loss) AS mean_loss,
       avg(CASE WHEN pred = target THEN 1.0 ELSE 0.0 END) AS accuracy,
       count(*) FILTER (WHERE NOT isfinite(loss)) AS nonfinite_losses
FROM records
WHERE split = 'train'
GROUP BY epoch
ORDER BY epoch
