vendor/top.go
