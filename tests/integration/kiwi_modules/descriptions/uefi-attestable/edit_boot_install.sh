#!/bin/bash
# edit-boot hook (validation test: never run)
true
