// A test tree for TestManyTestBinaries (../../process_test.go): 8 packages whose test
// binaries `go test -p 8 ./...` runs at once. Not part of the portmgr module.
module manybins

go 1.22

require portmgr/bindings/go v0.0.0

replace portmgr/bindings/go => ../..
