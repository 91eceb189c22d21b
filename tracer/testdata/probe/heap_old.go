//go:build !go1.24

package main

// newerRecords: Go before 1.24 has no cleanups nor weak pointers.
func newerRecords(*payload) {}
