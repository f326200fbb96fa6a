module portmgr/bindings/go

go 1.22
