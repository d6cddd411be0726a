module dtooracle

go 1.24
