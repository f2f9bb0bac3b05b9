vendor/drop/d.go
