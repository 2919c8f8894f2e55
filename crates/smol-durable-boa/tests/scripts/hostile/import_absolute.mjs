export const meta = { name: "hostile", description: "a script that tries to take the host down" };
import secrets from "/etc/passwd";
export default secrets;
