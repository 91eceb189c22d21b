package main

import (
	"os"
	"runtime"
	"sync"
)

// The leak proof reads the runtime's heap structures through offsets that
// gotrace's per-version heap layout table takes from this program's DWARF.
// A type is in DWARF only if linked code uses it, so this file uses
// everything whose runtime records the proof reads (finalizers, sync
// primitives; cleanups and weak pointers in heap_go124.go). It runs only
// with GOTRACE_PROBE_HEAP=1, so the probe's goroutines stay as they were.
func init() {
	if os.Getenv("GOTRACE_PROBE_HEAP") == "1" {
		useHeapRecords()
	}
}

type payload struct {
	next *payload
	data [4]int
}

//go:noinline
func useHeapRecords() {
	var mu sync.Mutex
	var rw sync.RWMutex
	var wg sync.WaitGroup
	cond := sync.NewCond(&mu)
	ready := false
	wg.Add(1)
	go func() {
		defer wg.Done()
		mu.Lock()
		ready = true
		cond.Signal()
		mu.Unlock()
	}()
	mu.Lock()
	for !ready {
		cond.Wait()
	}
	mu.Unlock()
	wg.Wait()
	rw.RLock()
	rw.RUnlock()
	p := &payload{}
	runtime.SetFinalizer(p, func(*payload) {})
	newerRecords(&payload{next: p})
	runtime.KeepAlive(p)
}
