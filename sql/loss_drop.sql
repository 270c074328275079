-- name: loss_drop
-- Loss drop per sample (the TailSFT signal, offline): how far its loss fell from its first recorded pass.
--   initial_loss = its mean loss in the reference pass: epoch $initial_epoch of split $initial_split (the
--                  pre-training pass, split 'initial', when the run recorded one; else the first recorded
--                  epoch of $split)
--   final_loss   = its mean loss in its last recorded epoch of $split in [$epoch_from, $epoch_to)
--   loss_drop    = initial_loss - final_loss
-- A large drop marks an example the model fitted far below where it started (memorised outliers, which
-- TailSFT leaves out); a negative one, an example that got worse.
-- parameters: $split (text), $initial_split (text), $initial_epoch (int), $epoch_from (int), $epoch_to (int, exclusive)
-- views: epoch_stats
WITH initial AS (
    SELECT sample_id, loss AS initial_loss
    FROM epoch_stats
    WHERE split = $initial_split
      AND epoch = $initial_epoch
),
final AS (
    SELECT sample_id, max(epoch) AS final_epoch, max_by(loss, epoch) AS final_loss
    FROM epoch_stats
    WHERE split = $split
      AND epoch >= $epoch_from
      AND epoch < $epoch_to
    GROUP BY sample_id
)
SELECT sample_id, initial_loss, final_loss, initial_loss - final_loss AS loss_drop, final_epoch
FROM initial
JOIN final USING (sample_id)
