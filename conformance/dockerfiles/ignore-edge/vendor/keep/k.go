vendor/keep/k.go
