//go:build go1.24

package main

import (
	"runtime"
	"unique"
	"weak"
)

// newerRecords uses the special records of Go 1.24+: cleanups, weak
// handles (weak, unique) and pins.
//
//go:noinline
func newerRecords(p *payload) {
	runtime.AddCleanup(p, func(int) {}, 0)
	w := weak.Make(p)
	_ = unique.Make("probe")
	var pin runtime.Pinner
	pin.Pin(p)
	pin.Unpin()
	runtime.KeepAlive(w.Value())
}
