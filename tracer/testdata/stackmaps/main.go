// The stack-map tests' program (gobin/stackmaps.rs): goroutines parked
// with live and dead pointers in their frames. It prints the addresses the
// test looks for, then "ready", and waits to be killed.
package main

import (
	"fmt"
	"os"
	"time"
)

// Every channel a goroutine used, so none is freed (a freed slot could be
// reused by a live one).
var all []chan int

func keep(c chan int) chan int {
	all = append(all, c)
	return c
}

// deadThenPark leaves channels in its frame from finished loop iterations
// (dead at the park), and parks with one more that it uses afterwards.
//
//go:noinline
func deadThenPark(park chan int) {
	for i := 0; i < 3; i++ {
		d := keep(make(chan int, 1))
		d <- i
		fmt.Printf("dead %p\n", d)
		<-d
	}
	live := keep(make(chan int, 1))
	fmt.Printf("live %p\n", live)
	<-park
	live <- 1
}

type pair struct {
	a, b chan int
}

// addressed parks with a stack object (a variable whose address is taken)
// reached from a live pointer.
//
//go:noinline
func addressed(park chan int) {
	p := pair{a: keep(make(chan int, 1)), b: keep(make(chan int, 1))}
	fmt.Printf("object %p %p\n", p.a, p.b)
	use(&p, park)
}

//go:noinline
func use(p *pair, park chan int) {
	<-park
	p.a <- 1
}

func noop() {}

// deferred parks with a channel reachable only through its deferred
// closure, which lives on the stack and is reached through g._defer (nine
// defers: not open-coded, so the records are on the stack too).
//
//go:noinline
func deferred(park chan int) {
	x := keep(make(chan int, 1))
	fmt.Printf("deferred %p\n", x)
	defer noop()
	defer noop()
	defer noop()
	defer noop()
	defer noop()
	defer noop()
	defer noop()
	defer noop()
	defer func() { x <- 1 }()
	<-park
}

//go:noinline
func waiter(c chan int) { <-c }

func main() {
	// Leaks whose channels stay in main's frame, dead, while it sleeps.
	for i := 0; i < 3; i++ {
		c := make(chan int)
		go waiter(c)
		fmt.Printf("leak %p\n", c)
	}
	park := make(chan int)
	go deadThenPark(park)
	go addressed(park)
	go deferred(park)
	time.Sleep(100 * time.Millisecond)
	fmt.Println("ready", os.Getpid())
	time.Sleep(time.Hour)
	close(park)
}
