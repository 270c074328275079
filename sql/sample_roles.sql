-- name: sample_roles
-- Every registered sample's role: is_threshold (a threshold sample, AUM), probe and probe_role (a MAP-D
-- probe of suite `probe`, 'reference' or 'heldout'), is_real = neither (the samples every score flags).
-- parameters: none
-- views: samples
SELECT
    sample_id,
    label,
    is_threshold,
    probe,
    probe_role,
    (NOT is_threshold AND probe IS NULL) AS is_real
FROM samples
ORDER BY sample_id
