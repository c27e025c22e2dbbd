# DO NOT EDIT. Generated from schemas/*.fbs by "make regen" (python -m edge.wire._gen) with flatc 25.12.19.
