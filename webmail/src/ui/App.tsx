import { session } from '../state/session';
import { useStore } from './hooks';
import { Mail } from './Mail';
import { SignIn } from './SignIn';

export function App() {
  const current = useStore(session);
  return current ? <Mail key={current.token} user={current.user} /> : <SignIn />;
}
