"""How runs train: a group of arms as one stacked model or as towers (`training`, `stacked`,
`towers`), watched by one callback (`monitor`), on one device or mirrored (`strategies`),
in this process or as Ray tasks (`cluster`)."""
