module github.com/loraft/loraft

go 1.26.0

replace github.com/sugarme/gotch => ./third_party/gotch

require github.com/sugarme/gotch v0.9.1
