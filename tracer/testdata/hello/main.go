// Command hello links as little of the runtime as a Go program can: the
// heap layout tests check that the runtime functions gotrace's table reads
// globals from are linked even here.
package main

func main() { println("hello") }
