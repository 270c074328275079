-- Which observed label the model predicts as which class in the latest committed epoch.
-- tdlog sql RUN -f examples/queries/confusion_latest.sql
SELECT target AS label, pred AS predicted, count(*) AS n
FROM records
WHERE split = 'train'
  AND epoch = (SELECT max(epoch) FROM records WHERE split = 'train')
  AND pred <> target
GROUP BY ALL
ORDER BY n DESC, label, predicted
