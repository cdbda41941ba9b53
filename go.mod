module github.com/v2a-dr/v2a

go 1.26.0

require github.com/google/go-cmp v0.7.0
