module stackmaps

go 1.19
