# example.s — print a line and exit, setting the system-call registers only through the map.
#
# Build and run: make joy   (links target/release/libof.a; GNU as, Intel syntax)
# Map offsets: rax 0x00, rdx 0x10, rsi 0x30, rdi 0x38 (x86 encoding order, 8 bytes each).

        .intel_syntax noprefix
        .section .rodata
message:
        .ascii "memory-mapped registers work!\n"
        .set message_len, . - message

        .text
        .globl main
main:
        sub rsp, 8                              # align the stack to 16 for the call
        call map_registers                      # install of's handler (returns 0 on success)
        test eax, eax                           # did it fail?
        jnz failed                              # then exit with status 1
        mov qword ptr [0x00], 1                 # rax = 1 (SYS_write), through the map
        mov qword ptr [0x38], 1                 # rdi = 1 (stdout), through the map
        lea rcx, [rip + message]                # rcx = &message (an ordinary register move)
        mov qword ptr [0x30], rcx               # rsi = &message, through the map
        mov qword ptr [0x10], message_len       # rdx = length, through the map
        syscall                                 # write(1, message, length)
        mov qword ptr [0x00], 60                # rax = 60 (SYS_exit), through the map
        mov qword ptr [0x38], 0                 # rdi = 0 (status), through the map
        syscall                                 # exit(0): does not return
failed:
        mov eax, 1                              # status 1
        add rsp, 8                              # undo the alignment
        ret                                     # return from main

        .section .note.GNU-stack, "", @progbits # no executable stack
