#!/bin/bash
# repository customize script (validation test: never run)
true
