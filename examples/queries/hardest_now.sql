-- The samples with the lowest margin in the latest committed epoch (the likely mislabeled, right now).
-- tdlog sql RUN -f examples/queries/hardest_now.sql -p top=20
SELECT e.sample_id, e.epoch, e.margin, e.loss, e.prob, s.label
FROM epoch_stats AS e
JOIN samples AS s USING (sample_id)
WHERE e.split = 'train'
  AND e.epoch = (SELECT max(epoch) FROM records WHERE split = 'train')
ORDER BY e.margin, e.sample_id
LIMIT $top
