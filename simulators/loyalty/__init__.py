"""Aurora Loyalty's MemberService: a SOAP 1.2 rpc/literal loyalty system, run twice."""
