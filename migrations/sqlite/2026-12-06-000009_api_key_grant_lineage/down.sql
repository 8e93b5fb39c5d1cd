-- Nothing to undo: the filled-in grants are true of the data.
SELECT 1;
