package portmgr

/*
#cgo pkg-config: portmgr
#include "pm_helpers.h"
*/
import "C"

import (
	"runtime"
	"syscall"
	"unsafe"
)

// Code is a stable error code of the core, the same in every language (C's
// portmgr_status, the CLI's exit codes map from it, Python's exception classes).
type Code uint32

// The error codes. New kinds get new numbers; treat unknown values as errors.
const (
	CodeInvalidArgument   Code = 1
	CodeExhausted         Code = 2
	CodeInUse             Code = 3
	CodeNotFound          Code = 4
	CodeNotOwner          Code = 5
	CodeTimeout           Code = 6
	CodeRegistryCorrupt   Code = 7
	CodeInsecureDirectory Code = 8
	CodeOS                Code = 9
	CodeInternal          Code = 10
)

// String is the library's short name of the code ("in use", "ports exhausted", ...).
func (c Code) String() string {
	return C.GoString(C.portmgr_status_str(C.portmgr_status(c)))
}

// kind is the type of the sentinels: an *Error matches the sentinel of its code.
type kind struct{ code Code }

func (k *kind) Error() string { return "portmgr: " + k.code.String() }

// The sentinels, one per core error kind: test an error with errors.Is, e.g.
// errors.Is(err, portmgr.ErrExhausted). Every error this package returns is an *Error
// (errors.As gives its Code, the library's Message and, for ErrOS, the Errno).
var (
	// ErrInvalidArgument: a bad request (a reversed range, a port above 65535, a
	// negative count or TTL, a NUL byte in a name...) or a closed Registry.
	ErrInvalidArgument error = &kind{CodeInvalidArgument}
	// ErrExhausted: no free port is left in the range asked for.
	ErrExhausted error = &kind{CodeExhausted}
	// ErrInUse: the port (a required preferred port) or the name is held by someone else.
	ErrInUse error = &kind{CodeInUse}
	// ErrNotFound: no live lease with that port, name or id.
	ErrNotFound error = &kind{CodeNotFound}
	// ErrNotOwner: the lease belongs to another live process.
	ErrNotOwner error = &kind{CodeNotOwner}
	// ErrTimeout: a wait ran past its deadline (the registry lock, most often; the
	// message names the process holding it).
	ErrTimeout error = &kind{CodeTimeout}
	// ErrRegistryCorrupt: the registry file is damaged or of an unknown version.
	ErrRegistryCorrupt error = &kind{CodeRegistryCorrupt}
	// ErrInsecureDirectory: the registry directory or a file in it is not safe to use
	// (owner, mode, symlink, network file system); the message says how to fix it.
	ErrInsecureDirectory error = &kind{CodeInsecureDirectory}
	// ErrOS: an operating-system call failed; the *Error's Errno says which
	// (errors.Is(err, syscall.EACCES) works too).
	ErrOS error = &kind{CodeOS}
	// ErrInternal: a bug inside portmgr. Please report it with the message.
	ErrInternal error = &kind{CodeInternal}
)

var sentinels = map[Code]error{
	CodeInvalidArgument: ErrInvalidArgument, CodeExhausted: ErrExhausted, CodeInUse: ErrInUse,
	CodeNotFound: ErrNotFound, CodeNotOwner: ErrNotOwner, CodeTimeout: ErrTimeout,
	CodeRegistryCorrupt: ErrRegistryCorrupt, CodeInsecureDirectory: ErrInsecureDirectory,
	CodeOS: ErrOS, CodeInternal: ErrInternal,
}

// Error is a failed portmgr call.
type Error struct {
	Code    Code          // the stable code
	Message string        // the library's message (what happened and, often, what to do)
	Errno   syscall.Errno // for CodeOS: the errno; else 0
}

// Error is "portmgr: " and the library's message.
func (e *Error) Error() string {
	if e.Message == "" {
		return "portmgr: " + e.Code.String()
	}
	return "portmgr: " + e.Message
}

// Is makes errors.Is(err, ErrExhausted) (and every other sentinel) match by code.
func (e *Error) Is(target error) bool {
	k, ok := target.(*kind)
	return ok && k.code == e.Code
}

// Unwrap gives the errno of an OS error, so errors.Is(err, syscall.EADDRINUSE) works.
func (e *Error) Unwrap() error {
	if e.Errno != 0 {
		return e.Errno
	}
	return nil
}

// Kind is the sentinel of e's code (nil for a code this package does not know).
func (e *Error) Kind() error { return sentinels[e.Code] }

// newError makes the error of a failed helper call; it frees msg (malloc'd by C).
func newError(st C.portmgr_status, msg *C.char, osErrno C.int) error {
	e := &Error{Code: Code(st), Errno: syscall.Errno(osErrno)}
	if msg != nil {
		e.Message = C.GoString(msg)
		C.free(unsafe.Pointer(msg))
	}
	return e
}

// invalid is an ErrInvalidArgument found while converting Go values for C.
func invalid(msg string) error {
	return &Error{Code: CodeInvalidArgument, Message: "invalid argument: " + msg}
}

// call runs one C call and, if it fails, reads this thread's message before the
// goroutine can move to another thread.
func call(f func() C.portmgr_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	st := f()
	if st == C.PORTMGR_OK {
		return nil
	}
	var msg *C.char
	var osErrno C.int
	C.pm_fail(st, &msg, &osErrno)
	return newError(st, msg, osErrno)
}
