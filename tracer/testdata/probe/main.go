// Command probe is a tiny Go program used by the gotrace tests: it has a few
// non-inlined functions, starts goroutines with `go` statements and blocks on
// channels and a select so that the tracer can observe wait reasons.
package main

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"
)

// square is small enough to be inlined into leaf.
func square(i int) int {
	return i * i
}

//go:noinline
func leaf(x int) int {
	s := 0
	for i := 0; i < x; i++ {
		s += square(i)
	}
	return s
}

//go:noinline
func receiveForever(ch chan int, done chan struct{}) {
	for {
		select {
		case v := <-ch:
			_ = leaf(v)
		case <-done:
			return
		}
	}
}

//go:noinline
func sleepForever() {
	for {
		time.Sleep(time.Hour)
	}
}

// blockInSyscall reads a pipe nobody writes to with a raw system call:
// the goroutine stays in the syscall state.
//
//go:noinline
func blockInSyscall() {
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		return
	}
	buf := make([]byte, 1)
	_, _ = syscall.Read(p[0], buf)
}

//go:noinline
func worker(id int, results chan<- int) {
	results <- leaf(id + 10)
}

// withTimeout makes a timerCtx (and its cancelCtx) so that their layout is
// in the probe's DWARF (gotrace's per-version layout table comes from it).
//
//go:noinline
func withTimeout() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	cancel()
	return ctx.Err()
}

func main() {
	n := 3
	if len(os.Args) > 1 && os.Args[1] == "-wait" {
		n = 0
	}
	ch := make(chan int)
	done := make(chan struct{})
	go receiveForever(ch, done)
	results := make(chan int, 4)
	for i := 0; i < 4; i++ {
		go worker(i, results)
	}
	total := 0
	if withTimeout() == nil {
		total--
	}
	for i := 0; i < 4; i++ {
		total += <-results
	}
	for i := 0; i < n; i++ {
		ch <- i
		time.Sleep(time.Millisecond)
	}
	if n == 0 {
		// Block forever in a channel receive so a tracer can inspect us
		// (the sleeper keeps the runtime from calling it a deadlock).
		go sleepForever()
		go blockInSyscall()
		<-make(chan int)
	}
	// A real closure (several lines), unlike the wrappers `go f(x)` makes.
	closureDone := make(chan int)
	go func() {
		v := leaf(5)
		closureDone <- v
	}()
	total += <-closureDone
	close(done)
	fmt.Println("probe done", total)
}
