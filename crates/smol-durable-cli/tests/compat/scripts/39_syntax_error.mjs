export const meta = { name: "syntax-error", description: "A syntax error fails before anything runs" };

const ok = 1;
const broken = { ;
export default ok;
